//! The room's task: applies one input at a time to the guest, journals it,
//! delivers the guest's effects to players, and supervises the guest: a
//! guest that fails is replaced by a fresh instance brought back to the
//! last good state (checkpoint plus journal, minus the failing input).

mod capsules;
mod durability;
mod lifecycle;
mod members;
mod migration;
mod operations;
mod outbox;
mod recovery;
mod sleep;
mod supervision;

use members::Member;
use outbox::{Held, Outbox};

use super::crash::{self, CrashReport};
use super::failure::{MoveRefused, RoomFailure};
use super::journal::{Checkpoint, Entry, Input, Journal};
use super::registry::RoomKey;
use super::{JoinError, Joined, PlayerId, RoomCmd, Rooms, ToSession};
use crate::modules::GameModule;
use crate::protocol::{self, ErrorCode, ProtocolError, ServerMsg};
use crate::sandbox::{CallResult, Effect, GuestFault, GuestInstance, Rejection};
use bytes::Bytes;
use serde_json::value::RawValue;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;

pub use recovery::RecoveredSeat;
pub(super) use recovery::Recovery;

/// What a room recovered at start begins from.
pub(super) fn recovery_of(
    stored: crate::storage::StoredRoom,
    seats: HashMap<PlayerId, String>,
    done: oneshot::Sender<Vec<RecoveredSeat>>,
) -> Recovery {
    Recovery { stored, seats, done }
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
    /// The game's storage.
    space: Option<Arc<crate::storage::kv::GameSpace>>,
    /// Inputs journaled since the room opened (the next one's index).
    index: u64,
    /// Checkpoints written to the database.
    generation: u64,
    /// Frames waiting for their input to reach the disk (`strict`).
    outbox: Outbox,
    /// The durable state to come back from, for a room recovered at start.
    recovery: Option<recovery::Recovery>,
    /// A frame that no input explains went out (a restart notice): take a
    /// checkpoint after this step.
    resync: bool,
    /// The last checkpoint could not be restored into a fresh instance
    /// (see `go_on_fresh`): said once in the log until it works again.
    stale_instance: bool,
    /// The instance is a fresh one restored from the current checkpoint
    /// (plus what the journal holds since): what a sleeping room's wake
    /// rebuilds, so only then may it sleep.
    on_checkpoint: bool,
    /// When a quiet room checkpoints what it journaled (see
    /// [`QUIET_CHECKPOINT`]).
    quiet_at: Option<Instant>,
    /// The span after the next checkpoint is shortened by the seed (see
    /// `supervision.stagger_checkpoints`): set where rooms checkpoint
    /// together, at their first checkpoint and after a hot swap.
    stagger_next: bool,
    /// When the room last had something to do (see `sleep`).
    active_at: Instant,
    /// A candidate version shadowing this room (`respawn shadow`).
    shadow: Option<crate::deploy::shadow::Feed>,
    /// The game's metrics.
    metrics: Arc<crate::metrics::GameMetrics>,
    /// What operators see of the room (`respawn room`).
    stats: Stats,
}

/// Counts of the room's life, for operators.
#[derive(Default)]
struct Stats {
    calls: u64,
    faults: u64,
    restarts: u64,
    last_input_ms: u64,
    opened_ms: u64,
}

/// A room that took inputs and then went quiet checkpoints after this
/// long: under `checkpoint` its last inputs are on disk soon, and under
/// `journal` the database's log need not keep its few entries (and every
/// later room's) around.
const QUIET_CHECKPOINT: Duration = Duration::from_secs(10);

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
    /// An operator closed it, with this reason for the players.
    Closed(String),
    /// Another node of the fleet owns it now: nothing is saved or
    /// released here (what is not durable never happened), and players
    /// are sent to resume there.
    Moved(oneshot::Sender<()>),
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
        let metrics = crate::metrics::METRICS.game(&key.game);
        let every = rooms.config.supervision.checkpoint_every as usize;
        let journal_budget = rooms.journal_budget.clone();
        let space = rooms.kv.as_ref().map(|kv| kv.game(&key.game));
        let durable = rooms
            .store
            .as_ref()
            .filter(|s| s.level() == crate::config::Durability::Strict)
            .map(|s| s.watch());
        Self {
            space,
            index: 0,
            generation: 0,
            outbox: Outbox::new(durable),
            recovery: None,
            resync: false,
            stale_instance: false,
            on_checkpoint: false,
            quiet_at: None,
            stagger_next: false,
            active_at: Instant::now(),
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
            shadow: None,
            metrics,
            stats: Stats {
                opened_ms: crate::unix_ms(),
                ..Stats::default()
            },
        }
    }

    /// The room comes back from the database instead of starting fresh.
    pub(super) fn recovering(mut self, recovery: Recovery) -> Self {
        self.recovery = Some(recovery);
        self
    }

    /// The room's clock for the next input: wall time, never going back.
    fn now(&mut self) -> u64 {
        self.last_now = self.last_now.max(crate::unix_ms());
        self.last_now
    }

    pub(super) async fn run(mut self, mut rx: mpsc::Receiver<RoomCmd>, mut control: mpsc::Receiver<RoomCmd>) {
        // `None` while the room sleeps (see `sleep`).
        let mut guest = match self.start().await {
            Ok(guest) => Some(guest),
            Err(e) => {
                self.rooms.retire(&self.key, self.id);
                drain(&mut control, &e).await;
                drain(&mut rx, &e).await;
                return;
            }
        };
        tracing::info!(room = %self.label, version = %self.module.version, seed = self.seed, "room opened");
        // A recovered room may have players (parked, waiting to resume).
        if self.players.is_empty() {
            self.empty_deadline = Some(Instant::now() + self.rooms.config.rooms.linger());
        }

        let stop = loop {
            let sleep_at = guest.as_ref().and_then(|g| self.sleep_at(g));
            // Not while a command waits: it would only wake the room again.
            let inbox_empty = rx.is_empty();
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
            // Operators' commands first (a full inbox cannot hold up a
            // rollback or a shutdown); between a due tick and players'
            // commands the pick is fair, so a tick that takes its whole
            // period cannot starve the players (nor they the tick).
            let players_or_tick = async {
                tokio::select! {
                    _ = tick => Ok(Wake::Tick),
                    cmd = rx.recv() => cmd.map(Wake::Cmd).ok_or(Stop::InboxClosed),
                    // Not while a command waits: a join queued to a room
                    // that is about to close for being empty is served
                    // (with `rooms.linger_ms = 0`, a new room's first join
                    // would otherwise race its close).
                    () = linger, if rx.is_empty() => Err(Stop::Empty),
                }
            };
            let quiet = async {
                match self.quiet_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let sleep = async move {
                match sleep_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let holding = self.outbox.holding();
            let wake = tokio::select! {
                biased;
                Some(cmd) = control.recv() => Wake::Cmd(cmd),
                () = self.outbox.progress(), if holding => Wake::Durable,
                () = quiet => Wake::Quiet,
                () = sleep, if inbox_empty => Wake::Sleep,
                woke = players_or_tick => match woke {
                    Ok(wake) => wake,
                    Err(stop) => break stop,
                },
            };
            // What keeps a room awake: its inputs and commands, not an
            // operator looking at it.
            let active = match &wake {
                Wake::Cmd(RoomCmd::Operate(crate::room::operations::Operation::Inspect(_))) => false,
                Wake::Cmd(_) | Wake::Tick | Wake::Durable => true,
                Wake::Quiet | Wake::Sleep => false,
            };
            let step = match wake {
                Wake::Sleep => self.fall_asleep(&mut guest).await,
                Wake::Quiet => {
                    self.quiet_at = None;
                    self.resync = !self.journal.entries().is_empty();
                    Ok(())
                }
                // A sleeping room is looked at, stopped or moved as it is:
                // none of it needs an instance (its checkpoint is its
                // state). Awake, `handle` does all three.
                Wake::Cmd(RoomCmd::Operate(crate::room::operations::Operation::Inspect(reply))) if guest.is_none() => {
                    let _ = reply.send(self.view(None));
                    Ok(())
                }
                Wake::Cmd(RoomCmd::Shutdown { done }) if guest.is_none() => self.shutdown(None, done).await,
                Wake::Cmd(RoomCmd::Moved { done }) if guest.is_none() => Err(Stop::Moved(done)),
                wake => {
                    if guest.is_none() {
                        match self.wake_up().await {
                            Ok(fresh) => guest = Some(fresh),
                            Err(stop) => break stop,
                        }
                    }
                    let Some(g) = guest.as_mut() else { continue };
                    match wake {
                        Wake::Durable => self.release(g).await,
                        Wake::Cmd(cmd) => self.handle(g, cmd).await,
                        // While storage fails the room does not move on its
                        // own (its inputs could not be saved).
                        Wake::Tick if !self.storage_accepting() => Ok(()),
                        Wake::Tick => match self.apply(g, Input::Tick).await {
                            Ok(_) => self.settle(g).await,
                            Err(stop) => Err(stop),
                        },
                        Wake::Sleep | Wake::Quiet => Ok(()),
                    }
                }
            };
            // Counted from the step's end: a long one (a swap waiting for
            // its decision) is not followed by a sleep at once.
            if active {
                self.active_at = Instant::now();
            }
            let step = match (step, guest.as_mut()) {
                (Ok(()), Some(g)) if self.journal.due() || std::mem::take(&mut self.resync) => self.checkpoint(g).await,
                (other, _) => other,
            };
            if let Err(stop) = step {
                break stop;
            }
        };

        // Forgotten by the database before the registry: a room created
        // under this name from now on writes after this.
        if !matches!(stop, Stop::Shutdown(_) | Stop::Moved(_)) {
            self.forget_durable();
        }
        self.rooms.retire(&self.key, self.id);
        let mut done = None;
        // What is held goes out once durable, before the last words
        // (unless the room moved: its new owner has the durable part).
        if !matches!(stop, Stop::Moved(_)) {
            self.drain_outbox().await;
        }
        let closing = match stop {
            Stop::Empty | Stop::InboxClosed => {
                tracing::info!(room = %self.label, "room closed: empty");
                JoinError::Closed("the room closed".into())
            }
            Stop::Shutdown(tx) => {
                done = Some(tx);
                JoinError::Closed("the host is shutting down".into())
            }
            Stop::Moved(tx) => {
                done = Some(tx);
                tracing::warn!(room = %self.label, "room moved to another node");
                let err = ProtocolError::new(
                    ErrorCode::RoomMoved,
                    "the room moved to another node: resume with your token on any node",
                );
                let frame = protocol::error_frame(&err, None, None);
                for (_, m) in self.players.drain() {
                    if let Some(to) = m.outbound {
                        let _ = to.try_send(ToSession::Moved(frame.clone()));
                    }
                }
                JoinError::Closed("the room moved to another node".into())
            }
            Stop::Closed(reason) => {
                tracing::info!(room = %self.label, reason, "room closed by an operator");
                let frame = ServerMsg::Closed { reason: &reason }.encode();
                for (_, m) in self.players.drain() {
                    if let Some(to) = m.outbound {
                        let _ = to.try_send(ToSession::Removed(frame.clone()));
                    }
                }
                JoinError::Closed(format!("the room was closed: {reason}"))
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
                    if let Some(to) = m.outbound {
                        let _ = to.try_send(ToSession::Removed(frame));
                    }
                }
                JoinError::Closed("the room's game failed; try again".into())
            }
        };
        if guest.is_none() {
            self.metrics.asleep.dec();
        }
        drop(guest);
        drain(&mut control, &closing).await;
        drain(&mut rx, &closing).await;
        if let Some(done) = done {
            let _ = done.send(());
        }
    }

    async fn handle(&mut self, guest: &mut GuestInstance, cmd: RoomCmd) -> Result<(), Stop> {
        match cmd {
            RoomCmd::Join {
                player,
                name,
                user,
                outbound,
                overflow,
                seat,
                reply,
            } => {
                if let Some(u) = &user
                    && self.rooms.config.auth.one_seat_per_user
                    && let Some((seated, _)) = self.players.iter().find(|(_, m)| m.user.as_deref() == Some(&u.id))
                {
                    let _ = reply.send(Err(JoinError::Seated(*seated)));
                    return Ok(());
                }
                let max = self.rooms.config.rooms.max_players;
                if self.players.len() >= max {
                    let _ = reply.send(Err(JoinError::Full(max)));
                    return Ok(());
                }
                if !self.storage_accepting() {
                    let _ = reply.send(Err(JoinError::StorageUnavailable));
                    return Ok(());
                }
                let user_id = user.as_ref().map(|u| u.id.clone());
                let input = Input::Join {
                    player,
                    name: name.clone(),
                    user,
                };
                let result = match self.apply(guest, input).await? {
                    Some(Ok(())) => {
                        let mut member = Member::new(Some(outbound), overflow, name);
                        member.user = user_id;
                        self.players.insert(player, member);
                        self.metrics.joins.inc();
                        self.save_seat(player, seat);
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
                if let Some(Held::Reply { reply, result, .. }) = self.outbox.pass(Held::Reply { reply, result, player })
                    && reply.send(result).is_err()
                {
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
                if !self.storage_accepting() {
                    let frame = protocol::error_frame(
                        &ProtocolError::new(
                            ErrorCode::StorageUnavailable,
                            "the host cannot save this room right now; the message was not applied",
                        ),
                        None,
                        reference.as_deref(),
                    );
                    if let Some(m) = self.players.get_mut(&player) {
                        m.notify(frame);
                    }
                    return Ok(());
                }
                // A copy: the frame's bytes share the connection's read
                // buffer, which the journal must not keep alive.
                let payload = Bytes::copy_from_slice(&payload);
                self.asking = reference.clone().map(|r| (player, r));
                let input = Input::Message {
                    player,
                    payload,
                    reference,
                };
                let answer = self.apply(guest, input).await?;
                let reference = self.asking.take().map(|(_, r)| r);
                self.deliver(guest);
                let reply = message_reply(answer.as_ref(), reference.as_deref());
                if let Some(frame) = reply
                    && let Some(m) = self.players.get_mut(&player)
                {
                    m.offer(player, ToSession::Frame(frame), &mut self.outbox);
                }
                self.settle(guest).await?;
            }
            RoomCmd::Leave { player } => self.remove(guest, player).await?,
            RoomCmd::Shadow { feed } => self.start_shadow(feed),
            RoomCmd::KickUser { user, reason } => {
                let frame = ServerMsg::Kicked { reason: &reason }.encode();
                for (id, m) in &mut self.players {
                    if m.user.as_deref() == Some(&user) {
                        m.offer(*id, ToSession::Removed(frame.clone()), &mut self.outbox);
                        m.leaving = true;
                    }
                }
                self.settle(guest).await?;
            }
            RoomCmd::Swap {
                module,
                ready,
                decision,
            } => self.swap(guest, module, ready, decision).await?,
            RoomCmd::Shutdown { done } => self.shutdown(Some(guest), done).await?,
            RoomCmd::Moved { done } => return Err(Stop::Moved(done)),
            RoomCmd::Operate(op) => self.operate(guest, op).await?,
        }
        Ok(())
    }
}

/// What a player is told about a message the room handled: `ack` when it
/// asked (`ref`), the game's rejection, or that the game failed on it.
fn message_reply(answer: Option<&Result<(), Rejection>>, reference: Option<&RawValue>) -> Option<Utf8Bytes> {
    match (answer, reference) {
        (Some(Ok(())), Some(r)) => Some(ServerMsg::Ack { reference: r }.encode()),
        (Some(Ok(())), None) => None,
        (Some(Err(rej)), r) => Some(protocol::error_frame(
            &ProtocolError::new(ErrorCode::Rejected, rej.message.clone()),
            Some(&rej.code),
            r,
        )),
        (None, r) => Some(protocol::error_frame(
            &ProtocolError::new(
                ErrorCode::GuestRestarted,
                "the game failed on this message; the room restarted without it",
            ),
            None,
            r,
        )),
    }
}

/// What woke the room.
enum Wake {
    Cmd(RoomCmd),
    Tick,
    /// More of the store is durable: held frames may go.
    Durable,
    /// The room journaled inputs and went quiet: time to checkpoint.
    Quiet,
    /// Nothing happened for `rooms.sleep_after_ms`: free the instance.
    Sleep,
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
            RoomCmd::Shutdown { done } | RoomCmd::Moved { done } => {
                let _ = done.send(());
            }
            _ => {}
        }
    }
}
