//! The room's task: applies one input at a time to the guest, journals it,
//! delivers the guest's effects to players, and supervises the guest: a
//! guest that fails is replaced by a fresh instance brought back to the
//! last good state (checkpoint plus journal, minus the failing input).

use super::crash::{self, CrashReport};
use super::failure::{MoveRefused, RoomFailure};
use super::journal::{Checkpoint, Entry, Input, Journal};
use super::persist::{self, SavedRoom};
use super::registry::RoomKey;
use super::{JoinError, Joined, PlayerId, RoomCmd, Rooms, ToSession};
use crate::modules::GameModule;
use crate::protocol::{self, ErrorCode, ProtocolError, ServerMsg};
use crate::sandbox::{CallResult, Effect, FaultKind, GuestFault, GuestInstance, Rejection};
use bytes::Bytes;
use serde_json::value::RawValue;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;

struct Member {
    outbound: mpsc::Sender<ToSession>,
    /// Raised when the queue overflowed (see [`super::Frames`]).
    overflow: CancellationToken,
    /// Kicked or too slow: receives nothing more, leaves after this batch.
    leaving: bool,
}

impl Member {
    /// Queues a frame unless the player is on the way out. A full queue
    /// makes the player leave: it is too slow to keep up, and its session
    /// is told at once.
    fn offer(&mut self, frame: ToSession) {
        if !self.leaving && self.outbound.try_send(frame).is_err() {
            self.leaving = true;
            self.overflow.cancel();
        }
    }
}

pub(super) struct RoomTask {
    rooms: Arc<Rooms>,
    key: RoomKey,
    id: u64,
    module: Arc<GameModule>,
    running: Arc<Mutex<Arc<GameModule>>>,
    seed: u64,
    label: String,
    players: HashMap<PlayerId, Member>,
    last_now: u64,
    tick: Option<Interval>,
    empty_deadline: Option<Instant>,
    journal: Journal,
    restarts: VecDeque<Instant>,
    /// The player whose message the guest is handling and the `ref` it
    /// carried: if the room dies of it, the `guest_fault` echoes the ref.
    asking: Option<(PlayerId, Box<RawValue>)>,
}

/// A room that had to close because its guest could not be kept alive.
struct Crash {
    reason: &'static str,
    fault: GuestFault,
    restart_error: Option<RoomFailure>,
    failed: Option<Entry>,
}

/// Why the room loop stopped.
enum Stop {
    Empty,
    InboxClosed,
    Crashed(Box<Crash>),
    Shutdown(oneshot::Sender<()>),
}

impl RoomTask {
    pub(super) fn new(
        rooms: Arc<Rooms>,
        key: RoomKey,
        id: u64,
        module: Arc<GameModule>,
        seed: u64,
        running: Arc<Mutex<Arc<GameModule>>>,
    ) -> Self {
        let label = format!("{}/{}#{id}", key.game, key.room);
        let every = rooms.config.supervision.checkpoint_every as usize;
        let journal_budget = rooms.journal_budget.clone();
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
            journal: Journal::new(
                Checkpoint {
                    state: Vec::new(),
                    entropy: Default::default(),
                    now: 0,
                },
                every,
                journal_budget,
            ),
            restarts: VecDeque::new(),
            asking: None,
        }
    }

    /// The room's clock for the next input: wall time, never going back.
    fn now(&mut self) -> u64 {
        self.last_now = self.last_now.max(crate::unix_ms());
        self.last_now
    }

    pub(super) async fn run(mut self, mut rx: mpsc::Receiver<RoomCmd>, mut control: mpsc::Receiver<RoomCmd>) {
        let mut guest = match self.start().await {
            Ok(guest) => guest,
            Err(e) => {
                self.rooms.retire(&self.key, self.id);
                drain(&mut control, &e).await;
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
            // Biased: operators' commands first (a full inbox cannot hold
            // up a rollback or a shutdown), then a due tick (ready at most
            // once a period, so it cannot starve players), then players'.
            let wake = tokio::select! {
                biased;
                Some(cmd) = control.recv() => Wake::Cmd(cmd),
                _ = tick => Wake::Tick,
                cmd = rx.recv() => match cmd {
                    Some(cmd) => Wake::Cmd(cmd),
                    None => break Stop::InboxClosed,
                },
                () = linger => break Stop::Empty,
            };
            let step = match wake {
                Wake::Cmd(cmd) => self.handle(&mut guest, cmd).await,
                Wake::Tick => match self.apply(&mut guest, Input::Tick).await {
                    Ok(_) => self.settle(&mut guest).await,
                    Err(stop) => Err(stop),
                },
            };
            let step = match step {
                Ok(()) if self.journal.due() => self.checkpoint(&mut guest).await,
                other => other,
            };
            if let Err(stop) = step {
                break stop;
            }
        };

        self.rooms.retire(&self.key, self.id);
        let mut done = None;
        let closing = match stop {
            Stop::Empty | Stop::InboxClosed => {
                tracing::info!(room = %self.label, "room closed: empty");
                JoinError::Closed("the room closed".into())
            }
            Stop::Shutdown(tx) => {
                done = Some(tx);
                JoinError::Closed("the host is shutting down".into())
            }
            Stop::Crashed(crash) => {
                self.report(&crash);
                let err = ProtocolError::new(
                    ErrorCode::GuestFault,
                    format!(
                        "the game failed ({}) and could not be kept running; the room closed",
                        crash.fault.kind.code()
                    ),
                );
                let frame = protocol::error_frame(&err, None, None);
                let asking = self.asking.take();
                for (player, m) in self.players.drain() {
                    let frame = match &asking {
                        Some((p, reference)) if *p == player => protocol::error_frame(&err, None, Some(reference)),
                        _ => frame.clone(),
                    };
                    let _ = m.outbound.try_send(ToSession::Removed(frame));
                }
                JoinError::Closed("the room's game failed; try again".into())
            }
        };
        drop(guest);
        drain(&mut control, &closing).await;
        drain(&mut rx, &closing).await;
        if let Some(done) = done {
            let _ = done.send(());
        }
    }

    /// The room's first instance, with the state saved at the last
    /// shutdown if there is one, and its first checkpoint.
    async fn start(&mut self) -> Result<GuestInstance, JoinError> {
        let now = self.now();
        let module = self.module.clone();
        let mut guest = self.instantiate(&module, now).await?;
        let dir = &self.rooms.config.state.dir;
        if let Some(saved) = crate::blocking::blocking(|| persist::load(dir, &self.key)) {
            guest = self.restore_saved(guest, saved, now).await?;
        }
        self.apply_tick_request(&mut guest);
        self.module.health.call();
        match checkpoint_of(&mut guest, now).await {
            Ok(cp) => self.journal.reset(cp),
            Err(fault) => {
                self.module.health.fault();
                tracing::error!(room = %self.label, version = %module.version, "snapshot failed at start: {fault}");
                return Err(JoinError::Closed(
                    "the game's snapshot failed; the room could not start".into(),
                ));
            }
        }
        Ok(guest)
    }

    /// Puts back the state a graceful shutdown saved; the players of then
    /// are gone, so the game is told they left. If the game cannot take
    /// the state, the room starts fresh.
    async fn restore_saved(
        &mut self,
        mut guest: GuestInstance,
        saved: SavedRoom,
        now: u64,
    ) -> Result<GuestInstance, JoinError> {
        let written_by = saved.version.clone().unwrap_or_else(|| "an unknown version".into());
        if saved.digest.as_deref().is_some_and(|d| d != self.module.digest()) {
            tracing::info!(room = %self.label, from = %written_by, to = %self.module.version, "restoring state saved by another version");
        }
        let put_back: CallResult<Result<(), String>> = async {
            if let Err(why) = guest.restore(now, &saved.state).await? {
                return Ok(Err(why));
            }
            for player in saved.players {
                guest.on_leave(now, player).await?;
            }
            Ok(Ok(()))
        }
        .await;
        let dir = &self.rooms.config.state.dir;
        match put_back {
            Ok(Ok(())) => {
                crate::blocking::blocking(|| persist::restored(dir, &self.key));
                tracing::info!(room = %self.label, "room state restored from the last shutdown");
            }
            Ok(Err(why)) => {
                let why = format!("{} refused the state {written_by} saved: {why}", self.module.version);
                crate::blocking::blocking(|| persist::set_aside(dir, &self.key, &why));
            }
            Err(fault) => {
                let why = format!("putting back the state {written_by} saved trapped: {fault}");
                crate::blocking::blocking(|| persist::set_aside(dir, &self.key, &why));
                let module = self.module.clone();
                return Ok(self.instantiate(&module, now).await?);
            }
        }
        guest.take_effects().for_each(drop);
        Ok(guest)
    }

    /// A new instance of `module` for this room, initialised. Effects of
    /// `init` have no audience and are dropped; a tick request is kept for
    /// the caller to apply.
    async fn instantiate(&self, module: &GameModule, now: u64) -> Result<GuestInstance, RoomFailure> {
        let rooms = &self.rooms;
        let mut guest = GuestInstance::new(&rooms.sandbox, &module.code, self.label.clone(), self.seed)
            .await
            .inspect_err(
                |e| tracing::warn!(room = %self.label, version = %module.version, "cannot instantiate: {e}"),
            )?;
        let config = rooms.config.game_init_config(&self.key.game);
        module.health.call();
        match guest.init(now, &self.key.room, &config).await {
            Ok(Ok(())) => {}
            Ok(Err(why)) => {
                tracing::warn!(room = %self.label, version = %module.version, "init refused: {why}");
                return Err(RoomFailure::InitRefused(why));
            }
            Err(fault) => {
                module.health.fault();
                tracing::error!(room = %self.label, version = %module.version, kind = ?fault.kind, "guest fault in init: {}", fault.detail);
                return Err(RoomFailure::InitTrapped(fault));
            }
        }
        guest.take_effects().for_each(drop);
        Ok(guest)
    }

    /// Applies one input. `Some(answer)` if the guest took it (it is
    /// journaled); `None` if the guest failed on it and was restarted
    /// without it.
    async fn apply(&mut self, guest: &mut GuestInstance, input: Input) -> Result<Option<Result<(), Rejection>>, Stop> {
        let now = self.now();
        self.module.health.call();
        let started = std::time::Instant::now();
        let result = call(guest, now, &input).await;
        self.module.health.took(started.elapsed());
        match result {
            Ok(answer) => {
                self.journal.record(now, input);
                Ok(Some(answer))
            }
            Err(fault) => {
                self.restart(guest, fault, Some(Entry { now, input })).await?;
                Ok(None)
            }
        }
    }

    /// Takes a new checkpoint; the journal starts over.
    async fn checkpoint(&mut self, guest: &mut GuestInstance) -> Result<(), Stop> {
        let now = self.now();
        self.module.health.call();
        match checkpoint_of(guest, now).await {
            Ok(cp) => {
                self.journal.reset(cp);
                Ok(())
            }
            Err(fault) => self.restart(guest, fault, None).await,
        }
    }

    /// The guest failed: replace it with a fresh instance at the last good
    /// state and tell the players, unless the room restarts too often.
    async fn restart(
        &mut self,
        guest: &mut GuestInstance,
        fault: GuestFault,
        failed: Option<Entry>,
    ) -> Result<(), Stop> {
        let player = failed.as_ref().and_then(|e| e.input.player());
        self.module.health.fault_by(player, fault.signature());
        let sup = &self.rooms.config.supervision;
        let window = Duration::from_millis(sup.window_ms);
        let now = Instant::now();
        while self.restarts.front().is_some_and(|t| now.duration_since(*t) > window) {
            self.restarts.pop_front();
        }
        if self.restarts.len() >= sup.max_restarts as usize {
            return Err(Stop::Crashed(Box::new(Crash {
                reason: "restart_intensity",
                fault,
                restart_error: None,
                failed,
            })));
        }
        self.restarts.push_back(now);
        tracing::warn!(room = %self.label, version = %self.module.version, kind = fault.kind.code(), "guest fault, restarting the room: {}", fault.detail);
        match self.rebuild().await {
            Ok(fresh) => *guest = fresh,
            Err(why) => {
                return Err(Stop::Crashed(Box::new(Crash {
                    reason: "restart_failed",
                    fault,
                    restart_error: Some(why),
                    failed,
                })));
            }
        }
        self.module.health.restart();
        tracing::info!(room = %self.label, replayed = self.journal.entries().len(), "room restarted from its checkpoint");
        let frame = ServerMsg::Restarted {
            version: &self.module.version.to_string(),
            reason: fault.kind.code(),
        }
        .encode();
        self.broadcast(frame, None);
        Ok(())
    }

    /// A fresh instance at the checkpoint, with the journal replayed.
    /// Effects of the replay were delivered the first time and are dropped.
    async fn rebuild(&mut self) -> Result<GuestInstance, RoomFailure> {
        let module = self.module.clone();
        let now = self.journal.checkpoint().now;
        let mut fresh = self.instantiate(&module, now).await?;
        let cp = self.journal.checkpoint();
        let version = || module.version.to_string();
        match fresh.restore(now, &cp.state).await {
            Ok(Ok(())) => {}
            Ok(Err(why)) => {
                return Err(RoomFailure::RestoreRefused {
                    version: version(),
                    why,
                });
            }
            Err(fault) => {
                return Err(RoomFailure::RestoreTrapped {
                    version: version(),
                    fault,
                });
            }
        }
        fresh.seek_entropy(cp.entropy);
        // Each call starts with no effects; only the last call's are left.
        for entry in self.journal.entries() {
            if let Err(fault) = call(&mut fresh, entry.now, &entry.input).await {
                return Err(RoomFailure::ReplayTrapped { at: entry.now, fault });
            }
        }
        fresh.take_effects().for_each(drop);
        fresh.take_tick_request();
        Ok(fresh)
    }

    /// Logs, counts and writes a crash report.
    fn report(&self, crash: &Crash) {
        self.module.health.crash();
        let at_ms = crate::unix_ms();
        let cp = self.journal.checkpoint();
        let restart_error = crash.restart_error.as_ref().map(ToString::to_string);
        let report = CrashReport {
            game: &self.key.game,
            room: &self.key.room,
            version: self.module.version.to_string(),
            digest: self.module.digest(),
            seed: self.seed,
            at_ms,
            reason: crash.reason,
            fault_kind: crash.fault.kind.code(),
            fault: &crash.fault.detail,
            restart_error: restart_error.as_deref(),
            restarts_in_window: self.restarts.len(),
            failed_input: crash.failed.as_ref(),
            checkpoint_hex: if cp.state.len() <= crash::MAX_CHECKPOINT_BYTES {
                crate::util::hex(&cp.state)
            } else {
                format!("(left out: {} bytes)", cp.state.len())
            },
            checkpoint_entropy: cp.entropy,
            checkpoint_now: cp.now,
            inputs_since_checkpoint: self.journal.entries(),
        };
        tracing::error!(
            room = %self.label,
            version = %self.module.version,
            reason = crash.reason,
            kind = crash.fault.kind.code(),
            restart_error = restart_error.as_deref(),
            "room crashed and closed: {}", crash.fault.detail
        );
        let (file, text) = match crash::render(&self.rooms.config.state.dir, &self.key, &report) {
            Ok(rendered) => rendered,
            Err(e) => {
                tracing::error!(room = %self.label, "cannot render the crash report: {e}");
                return;
            }
        };
        let label = self.label.clone();
        tokio::task::spawn_blocking(move || match crash::write(&file, &text, crash::MAX_REPORTS) {
            Ok(deleted) => tracing::error!(
                room = %label,
                report = %file.display(),
                older_reports_deleted = deleted,
                "crash report written (the newest {} are kept)",
                crash::MAX_REPORTS
            ),
            Err(e) => tracing::error!(room = %label, "cannot write the crash report: {e}"),
        });
    }

    /// Hot swap, between two inputs: snapshot the state, restore it into an
    /// instance of `module`, report, and switch only if told to commit.
    /// A room that cannot restore stays on its version and says why.
    async fn swap(
        &mut self,
        guest: &mut GuestInstance,
        module: Arc<GameModule>,
        ready: oneshot::Sender<Result<(), MoveRefused>>,
        decision: oneshot::Receiver<bool>,
    ) -> Result<(), Stop> {
        if module.digest() == self.module.digest() {
            let _ = ready.send(Ok(()));
            let _ = decision.await;
            return Ok(());
        }
        let now = self.now();
        self.module.health.call();
        let state = match guest.snapshot(now).await {
            Ok(state) => state,
            Err(fault) => {
                let _ = ready.send(Err(MoveRefused {
                    room: self.label.clone(),
                    failure: RoomFailure::SnapshotTrapped {
                        version: self.module.version.to_string(),
                    },
                }));
                return self.restart(guest, fault, None).await;
            }
        };
        // The snapshot is a good checkpoint whatever happens next: the
        // journal stays exact even if the snapshot call moved anything.
        let here = Checkpoint {
            state,
            entropy: guest.entropy_position(),
            now,
        };
        let next = match self.prepare(&module, now, &here.state).await {
            Ok(next) => next,
            Err(why) => {
                tracing::warn!(room = %self.label, "cannot move to {}: {why}", module.version);
                self.journal.reset(here);
                let _ = ready.send(Err(MoveRefused {
                    room: self.label.clone(),
                    failure: why,
                }));
                let _ = decision.await;
                return Ok(());
            }
        };
        // The coordinator always decides (a dropped sender is an abort).
        let commit = ready.send(Ok(())).is_ok() && matches!(decision.await, Ok(true));
        if !commit {
            self.journal.reset(here);
            return Ok(());
        }
        let from = std::mem::replace(&mut self.module, module);
        *guest = next;
        self.journal.reset(Checkpoint {
            entropy: guest.entropy_position(),
            ..here
        });
        *crate::lock(&self.running) = self.module.clone();
        self.apply_tick_request(guest);
        tracing::info!(room = %self.label, from = %from.version, to = %self.module.version, "room migrated");
        let frame = ServerMsg::Swapped {
            from: &from.version.to_string(),
            version: &self.module.version.to_string(),
        }
        .encode();
        self.broadcast(frame, None);
        self.settle(guest).await
    }

    /// An instance of `module` holding `state`, or why there cannot be one.
    async fn prepare(&self, module: &GameModule, now: u64, state: &[u8]) -> Result<GuestInstance, RoomFailure> {
        let mut next = self.instantiate(module, now).await?;
        module.health.call();
        let version = module.version.to_string();
        match next.restore(now, state).await {
            Ok(Ok(())) => {}
            Ok(Err(why)) => return Err(RoomFailure::RestoreRefused { version, why }),
            Err(fault) => {
                module.health.fault();
                return Err(RoomFailure::RestoreTrapped { version, fault });
            }
        }
        next.take_effects().for_each(drop);
        Ok(next)
    }

    /// The host is stopping: save the state for the next start, tell the
    /// players, close. The game does not see the players leave.
    async fn shutdown(&mut self, guest: &mut GuestInstance, done: oneshot::Sender<()>) -> Result<(), Stop> {
        let now = self.now();
        match guest.snapshot(now).await {
            Ok(state) => {
                let saved = SavedRoom {
                    players: self.players.keys().copied().collect(),
                    state,
                    version: Some(self.module.version.to_string()),
                    digest: Some(self.module.digest().to_owned()),
                };
                let dir = &self.rooms.config.state.dir;
                match crate::blocking::blocking(|| persist::save(dir, &self.key, &saved)) {
                    Ok(()) => tracing::info!(room = %self.label, "room state saved for the next start"),
                    Err(e) => tracing::error!(room = %self.label, "cannot save the room state: {e}"),
                }
            }
            Err(fault) => tracing::error!(room = %self.label, "snapshot at shutdown failed, state not saved: {fault}"),
        }
        for m in self.players.values_mut() {
            m.offer(ToSession::Shutdown);
        }
        Err(Stop::Shutdown(done))
    }

    async fn handle(&mut self, guest: &mut GuestInstance, cmd: RoomCmd) -> Result<(), Stop> {
        match cmd {
            RoomCmd::Join {
                player,
                name,
                outbound,
                overflow,
                reply,
            } => {
                let max = self.rooms.config.rooms.max_players;
                if self.players.len() >= max {
                    let _ = reply.send(Err(JoinError::Full(max)));
                    return Ok(());
                }
                let result = match self.apply(guest, Input::Join { player, name }).await? {
                    Some(Ok(())) => {
                        self.players.insert(
                            player,
                            Member {
                                outbound,
                                overflow,
                                leaving: false,
                            },
                        );
                        self.empty_deadline = None;
                        Ok(Joined {
                            version: self.module.version.to_string(),
                        })
                    }
                    Some(Err(rejection)) => Err(JoinError::Refused {
                        code: rejection.code,
                        message: rejection.message,
                    }),
                    None => Err(JoinError::Fault(
                        "the game failed on your join and restarted without it".into(),
                    )),
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
                // A copy: the frame's bytes share the connection's read
                // buffer, which the journal must not keep alive.
                let payload = Bytes::copy_from_slice(&payload);
                self.asking = reference.map(|r| (player, r));
                let answer = self.apply(guest, Input::Message { player, payload }).await?;
                let reference = self.asking.take().map(|(_, r)| r);
                self.deliver(guest);
                let reply = match (&answer, &reference) {
                    (Some(Ok(())), Some(r)) => Some(ServerMsg::Ack { reference: r }.encode()),
                    (Some(Ok(())), None) => None,
                    (Some(Err(rej)), r) => Some(protocol::error_frame(
                        &ProtocolError::new(ErrorCode::Rejected, rej.message.clone()),
                        Some(&rej.code),
                        r.as_deref(),
                    )),
                    (None, r) => Some(protocol::error_frame(
                        &ProtocolError::new(
                            ErrorCode::GuestRestarted,
                            "the game failed on this message; the room restarted without it",
                        ),
                        None,
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
            RoomCmd::Shutdown { done } => self.shutdown(guest, done).await?,
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
            if self.apply(guest, Input::Leave { player }).await?.is_none() {
                // The game failed on the leave and restarted without it, so
                // it still counts the player: once more, or the room cannot
                // go on consistently.
                if self.apply(guest, Input::Leave { player }).await?.is_none() {
                    return Err(Stop::Crashed(Box::new(Crash {
                        reason: "leave_failed",
                        fault: GuestFault {
                            kind: FaultKind::Trap,
                            detail: format!("on-leave of player {player} failed twice"),
                        },
                        restart_error: None,
                        failed: Some(Entry {
                            now: self.last_now,
                            input: Input::Leave { player },
                        }),
                    })));
                }
            }
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
                Effect::Broadcast { payload, except } => self.broadcast(protocol::event_frame(&payload), except),
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

    /// Queues one frame for every player but `except`.
    fn broadcast(&mut self, frame: Utf8Bytes, except: Option<PlayerId>) {
        for (id, m) in &mut self.players {
            if Some(*id) != except {
                m.offer(ToSession::Frame(frame.clone()));
            }
        }
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

/// Hands one input to the guest.
async fn call(guest: &mut GuestInstance, now: u64, input: &Input) -> CallResult<Result<(), Rejection>> {
    match input {
        Input::Join { player, name } => guest.on_join(now, *player, name).await,
        Input::Leave { player } => guest.on_leave(now, *player).await.map(Ok),
        Input::Message { player, payload } => guest.on_message(now, *player, payload).await,
        Input::Tick => guest.on_tick(now).await.map(Ok),
    }
}

/// The guest's state and random positions now.
async fn checkpoint_of(guest: &mut GuestInstance, now: u64) -> CallResult<Checkpoint> {
    let state = guest.snapshot(now).await?;
    guest.take_effects().for_each(drop);
    Ok(Checkpoint {
        state,
        entropy: guest.entropy_position(),
        now,
    })
}

/// What woke the room.
enum Wake {
    Cmd(RoomCmd),
    Tick,
}

/// After a room stops: refuse what is still queued so joiners retry a
/// fresh room.
async fn drain(rx: &mut mpsc::Receiver<RoomCmd>, why: &JoinError) {
    rx.close();
    while let Some(cmd) = rx.recv().await {
        match cmd {
            RoomCmd::Join { reply, .. } => {
                let _ = reply.send(Err(why.clone()));
            }
            RoomCmd::Shutdown { done } => {
                let _ = done.send(());
            }
            _ => {}
        }
    }
}
